"""The daemons behind ``serve`` and ``connect``: their main functions, the control
socket, ``show`` rendering and the demo."""
