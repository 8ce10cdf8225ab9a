"""devbox: isolated, identical dev environments from one bootc image."""

__version__ = "0.1.0"
