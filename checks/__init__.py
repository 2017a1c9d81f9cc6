"""Step checks beside the labelers: sympy and sandboxed-code verifiers, the LLM judge, consensus, hybrid labels."""
