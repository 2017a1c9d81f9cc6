"""Generation engines behind one interface: llama.cpp, OpenAI-compatible servers, vLLM."""
