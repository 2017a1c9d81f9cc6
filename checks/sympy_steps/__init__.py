"""The sections of the sympy step verifier; the public entry is :mod:`steplabel.checks.sympy_verifier`."""
