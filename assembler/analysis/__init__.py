"""Which pre-trained network, and which of its layers, to transfer from: DEPARA (Song et al.,
CVPR 2020) beside LogME (You et al., ICML 2021) and LEEP (Nguyen et al., ICML 2020).

    from assembler.analysis import rank, Settings, load_model, probe_from_flag
    probe = probe_from_flag('digits(split="test", classes=[5, 6, 7, 8, 9])')
    result = rank([load_model("source.net", "--candidates")], probe,
                  target=load_model("target.net", "--target"))

`assembler rank` is the command-line face of the same functions (docs/RANK.md).
"""

from __future__ import annotations

from .depara import Similarity, spearman
from .features import Probe, probe_from_flag, probe_set
from .heatmap import to_svg
from .leep import leep
from .logme import logme
from .models import Model, from_assembly, load_model
from .rank import METHODS, CandidateScore, LayerScore, Ranking, Settings, rank
from .report import to_json, to_text

__all__ = [
    "METHODS", "CandidateScore", "LayerScore", "Model", "Probe", "Ranking", "Settings", "Similarity",
    "from_assembly", "leep", "load_model", "logme", "probe_from_flag", "probe_set", "rank", "spearman",
    "to_json", "to_svg", "to_text",
]
