"""The preview player's control addresses (`stembridge preview`, on its own UDP port).
`protocol.messages` re-exports them; this module imports nothing of `messages`."""

from __future__ import annotations

PREFIX = "/stembridge"


class PreviewAddress:
    """Control addresses of the preview player (`stembridge preview`), which listens on
    its own UDP port (`DEFAULT_PREVIEW_PORT`), not on the server's. Errors it answers with
    `Address.ERROR`, in the server's error payload."""

    GAIN = f"{PREFIX}/preview/gain"                # s|i stem, f dB
    GAIN_LINEAR = f"{PREFIX}/preview/gain/linear"  # s|i stem, f factor
    MUTE = f"{PREFIX}/preview/mute"                # s|i stem [, i|f|T|F on]; no flag: toggle
    SOLO = f"{PREFIX}/preview/solo"                # s|i stem [, i|f|T|F on]; no flag: toggle
    KARAOKE = f"{PREFIX}/preview/karaoke"          # [i|f|T|F on]: mute the vocals
    RESET = f"{PREFIX}/preview/reset"              # every stem at 0 dB, unmuted, unsoloed
    SEEK = f"{PREFIX}/preview/seek"                # f seconds from the start of the song
    PLAY = f"{PREFIX}/preview/play"
    STOP = f"{PREFIX}/preview/stop"
    STATUS = f"{PREFIX}/preview/status"            # [i reply_port]
    AB = f"{PREFIX}/preview/ab"                    # [i|f|T|F on]: master (on) or original
    STATUS_REPLY = f"{PREFIX}/preview/status/reply"  # b payload


PREVIEW_CONTROLS = frozenset({
    PreviewAddress.GAIN, PreviewAddress.GAIN_LINEAR, PreviewAddress.MUTE, PreviewAddress.SOLO,
    PreviewAddress.KARAOKE, PreviewAddress.RESET, PreviewAddress.SEEK, PreviewAddress.PLAY,
    PreviewAddress.STOP, PreviewAddress.STATUS, PreviewAddress.AB})
