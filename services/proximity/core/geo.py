"""Geodesic distance on the WGS84 ellipsoid.

PROJ's `geod_inverse` (Karney's algorithm), the very function pyproj's `Geod.inv` calls, but
called with the GIL held. pyproj releases the GIL around every call, even a scalar one of about a
microsecond, and in the proximity service a reader thread is nearly always waiting for it: every
geodesic then woke the reader only for it to find the GIL taken again and sleep (0.25-0.4 context
switches a fix in the saturated service, docs/benchmarks.md). `ctypes.PyDLL` calls keep the GIL.
The result is the same double: same library, same ellipsoid, same function.
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import Callable
from typing import Final

from pyproj import Geod

_WGS84: Final = Geod(ellps="WGS84")
_STRUCT_BYTES: Final = 1024
"""Room for PROJ's `struct geod_geodesic` (51 doubles, 408 bytes, in PROJ 6-9)."""

Inverse = Callable[[float, float, float, float], float]


def held_inverse(library_path: str | None) -> Inverse | None:
    """`geod_inverse` of the PROJ that `library_path` (an object linked against it) loaded,
    set up for WGS84 as pyproj's `Geod` is and called without releasing the GIL: (lat1, lon1,
    lat2, lon2) -> metres. None when that object does not export it (another build of pyproj)."""
    try:
        library = ctypes.PyDLL(library_path)
        inverse, init = library.geod_inverse, library.geod_init
    except (OSError, AttributeError):
        return None
    double, out = ctypes.c_double, ctypes.POINTER(ctypes.c_double)
    init.argtypes = [ctypes.c_void_p, double, double]
    init.restype = None
    inverse.argtypes = [ctypes.c_void_p, double, double, double, double, out, out, out]
    inverse.restype = None
    geodesic = ctypes.create_string_buffer(_STRUCT_BYTES)  # referred to below: kept alive
    init(geodesic, _WGS84.a, _WGS84.f)

    def distance(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
        metres = double()  # one per call: another thread may be measuring too
        inverse(geodesic, lat1, lon1, lat2, lon2, metres, None, None)
        return metres.value

    return distance


def pyproj_inverse(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The same distance through pyproj's `Geod.inv` (which releases the GIL)."""
    distance: float = _WGS84.inv(lon1, lat1, lon2, lat2)[2]
    return distance


def _pyproj_extension() -> str | None:
    """The file of pyproj's compiled geodesic module (a private name of pyproj: None, and so
    `Geod.inv`, should a version lack it)."""
    spec = importlib.util.find_spec("pyproj._geod")
    return None if spec is None else spec.origin


distance_m: Final[Inverse] = held_inverse(_pyproj_extension()) or pyproj_inverse
"""Geodesic distance in metres between two WGS84 points given in degrees: (lat1, lon1, lat2,
lon2) -> metres."""
