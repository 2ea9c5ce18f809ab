"""What every layer shares and nothing else: the settings object and the user-facing error base.

The layers import downwards only: ui/api/eval -> rag -> index -> core.
"""
