"""The Gradio web UI (`python -m ui`)."""

import os

# The product runs offline: no usage analytics calls from Gradio.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
