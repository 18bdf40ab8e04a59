"""Writes the console's alert chime (services/console/static/alert.wav): 0.6 s alternating
880/660 Hz, 8 kHz mono 8-bit, about 5 kB. Generated here rather than taken from a sound library,
so its origin and licence are this repository's."""

from __future__ import annotations

import math
import wave
from pathlib import Path

RATE = 8000
OUT = Path(__file__).resolve().parent.parent / "services" / "console" / "static" / "alert.wav"


def main() -> None:
    frames = bytearray()
    for i in range(int(RATE * 0.6)):
        tone = 880 if (i // (RATE // 10)) % 2 == 0 else 660  # switch every 0.1 s
        frames.append(int(128 + 90 * math.sin(2 * math.pi * tone * i / RATE)))
    with wave.open(str(OUT), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(RATE)
        out.writeframes(bytes(frames))


if __name__ == "__main__":
    main()
