"""The package version, on the ground floor so that codegen (the banner of every generated file)
and runtime (saved modules) can read it without importing the ``cnncc`` facade."""

__version__ = "0.1.0"
