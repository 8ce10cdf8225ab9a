"""devbox-tui: the Textual face. It only calls devbox.core and renders what it reports."""
