"""A toy model defined outside the library: a spec module, a torch module, a Keras module
(``tests/test_architecture.py`` registers it and runs the whole CLI on it)."""
