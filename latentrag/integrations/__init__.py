"""Framework adapters. Import ``latentrag.integrations.langchain`` or ``latentrag.integrations.llama_index``
explicitly; this package itself imports neither framework."""
