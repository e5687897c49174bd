"""Small functions the runtime and storm tests load like the real `functions` package."""
