"""What one HTTP/2 connection may cost: its settings and DoS limits."""

from __future__ import annotations

#: Seconds over which resets, refusals and empty frames are counted.
RESET_WINDOW = 10.0
#: Frames handled per :meth:`H2Core.receive_data` call (see the module docstring).
FRAMES_PER_CALL = 1000


class H2Limits:
    """Per-connection settings and DoS limits (see the module docstring)."""

    __slots__ = (
        "max_concurrent_streams",
        "max_header_list_size",
        "initial_window_size",
        "connection_window_size",
        "max_resets",
        "max_empty_frames",
        "max_control_frames",
        "enable_connect_protocol",
    )

    def __init__(
        self,
        max_concurrent_streams: int = 100,
        max_header_list_size: int = 65536,
        initial_window_size: int = 262144,
        connection_window_size: int | None = None,
        max_resets: int = 200,
        max_control_frames: int = 10000,
        max_empty_frames: int = 1000,
        enable_connect_protocol: bool = True,
    ) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        self.max_header_list_size = max_header_list_size
        self.initial_window_size = initial_window_size
        #: the connection receive window; by default 4 stream windows (at least 64 KiB)
        self.connection_window_size = (
            connection_window_size if connection_window_size is not None else max(65535, 4 * initial_window_size)
        )
        self.max_resets = max_resets
        self.max_empty_frames = max_empty_frames
        self.max_control_frames = max_control_frames
        self.enable_connect_protocol = enable_connect_protocol
