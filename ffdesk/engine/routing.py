"""What a job needs from the node that runs it, decided once at submit time.

* storage roots: a file under a root is stored as ``root:relative`` and any node that has the
  root can run it; a local path under no root pins the job to the submitting node (once the
  cluster uses roots at all: a cluster without roots keeps the old rule, same paths
  everywhere);
* encoders: the hardware encoders and the well-known software ones a preset names (``-c:v
  hevc_nvenc`` needs ``hevc_nvenc``); a node advertises those that work (ffdesk.ffmpeg.hwprobe);
* tags and an FFmpeg version range, when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ffdesk.core.roots import RootMap, is_ref, parse_ref
from ffdesk.ffmpeg.hwprobe import SOFTWARE_ENCODERS, is_hardware
from ffdesk.ffmpeg.presets import Preset


@dataclass(frozen=True)
class Placement:
    """How one submitting machine stores paths and pins jobs."""

    roots: RootMap = field(default_factory=RootMap)
    cluster_has_roots: bool = False  # any root registered cluster-wide
    node: str | None = None  # the submitting machine's node identifier

    def store(self, path: str) -> str:
        """A local path as a job stores it: a root reference if under a root, else as is."""
        if is_ref(path) or "://" in path:
            return path
        return self.roots.to_ref(path) or path


def required_encoders(preset: Preset) -> list[str]:
    """Encoders a node must advertise to claim jobs of ``preset``. Only names a node can
    advertise (hardware ones that passed the probe, the well-known software ones); any other
    encoder is assumed present, and a node without it fails as ``environment`` and the job
    moves on."""
    return [e for e in preset.encoders if is_hardware(e) or e in SOFTWARE_ENCODERS]


def routing(
    preset: Preset,
    stored_input: str,
    stored_output: str,
    placement: Placement,
    *,
    tags: list[str] | None = None,
    pin: str | None = None,
    ffmpeg_min: str | None = None,
    ffmpeg_max: str | None = None,
) -> dict:
    """The routing fields of a :class:`ffdesk.core.model.NewJob`."""
    in_roots = [parse_ref(stored_input)[0]] if is_ref(stored_input) else []
    out_roots = [parse_ref(stored_output)[0]] if is_ref(stored_output) else []
    local = [p for p in (stored_input, stored_output) if not is_ref(p) and "://" not in p]
    pinned = pin
    if pinned is None and local and placement.cluster_has_roots:
        pinned = placement.node
    return {
        "in_roots": in_roots,
        "out_roots": out_roots,
        "requires": required_encoders(preset),
        "tags": sorted(set(tags or [])),
        "pinned_node": pinned,
        "ffmpeg_min": ffmpeg_min,
        "ffmpeg_max": ffmpeg_max,
    }
