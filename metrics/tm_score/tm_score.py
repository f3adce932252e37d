"""TM-score, RMSD and GDT-TS of predicted against reference protein structures with known residue correspondence."""

import datasets

import evaluate

from multimed_hf.metrics.structure import structure_scores

_DESCRIPTION = """
Compares predicted protein structures with reference structures whose residues correspond one to one (same
chain, same residue order), from C-alpha coordinates, one (L, 3) list of [x, y, z] in Angstrom per structure.

- tm_score: TM-score normalised by the reference length L, with d0 = 1.24 (L - 15)^(1/3) - 1.8 (0.5 A for
  L <= 21, never below 0.5 A), maximised over superpositions with the TMscore program's search (Kabsch fits on
  fragments of length L, L/2, ... 4 at every start position, each refined up to 20 times on the residues within
  the distance cut-off), not a single global fit. It equals TMscore / TM-align with a fixed alignment.
- rmsd: root-mean-square deviation (Angstrom) after the least-squares superposition of all observed residues.
- gdt_ts: GDT-TS as a fraction (0-1): the mean over cut-offs 1, 2, 4 and 8 A of the largest fraction of the L
  residues within the cut-off over the search's superpositions.

Each is averaged over the structure pairs. `masks` (one list of booleans per pair, True where the reference residue
is observed) leaves residues out of the fits; a masked residue scores 0 but still counts in L. The search runs compiled
with numba where it is installed (`backend="auto"`, the default; float64, exact), else in batches on numpy
(`backend="numpy"`), or on torch (`backend="torch"`, a GPU when one is present). Backbones, sequence-independent
TM-align and per-pair arrays are in the package: `multimed_hf.metrics.structure`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `list` of `float`): per structure, the predicted C-alpha coordinates, one
        [x, y, z] (Angstrom) per residue.
    references (`list` of `list` of `list` of `float`): per structure, the reference C-alpha coordinates, with the
        same number of residues as the prediction.
    masks (`list` of `list` of `bool`, optional): per structure, True where the reference residue is observed.
        Defaults to every residue observed.
    backend (`str`): "auto" (default: numba where installed, else numpy), "numba", "numpy" or "torch".

Returns:
    tm_score (`float`): mean TM-score, from 0 to 1 (1 is identical up to a rigid motion; higher is better).
    rmsd (`float`): mean RMSD in Angstrom, 0 or more (lower is better).
    gdt_ts (`float`): mean GDT-TS, from 0 to 1 (higher is better).

Examples:

    A prediction that is the reference moved by 10 A scores perfectly:

    >>> tm_metric = evaluate.load("metrics/tm_score")  # a local folder: run from the repository root
    >>> reference = [[0.0, 0.0, 0.0], [3.8, 0.0, 0.0], [3.8, 3.8, 0.0], [7.6, 3.8, 0.0], [7.6, 3.8, 3.8]]
    >>> prediction = [[x + 10.0, y, z] for x, y, z in reference]
    >>> result = tm_metric.compute(predictions=[prediction], references=[reference])
    >>> {key: round(value, 4) for key, value in result.items()}
    {'tm_score': 1.0, 'rmsd': 0.0, 'gdt_ts': 1.0}

    With its last residue not predicted (masked) it scores 0 but still counts in L = 5:

    >>> result = tm_metric.compute(predictions=[prediction], references=[reference], masks=[[True] * 4 + [False]])
    >>> {key: round(value, 4) for key, value in result.items()}
    {'tm_score': 0.8, 'rmsd': 0.0, 'gdt_ts': 0.8}
"""

_CITATION = """
@article{zhang2004scoring,
  title={Scoring function for automated assessment of protein structure template quality},
  author={Zhang, Yang and Skolnick, Jeffrey},
  journal={Proteins: Structure, Function, and Bioinformatics},
  volume={57},
  number={4},
  pages={702--710},
  year={2004}
}
@article{zemla2003lga,
  title={LGA: a method for finding 3D similarities in protein structures},
  author={Zemla, Adam},
  journal={Nucleic Acids Research},
  volume={31},
  number={13},
  pages={3370--3374},
  year={2003}
}
@article{mo2024multimed,
  title={MultiMed: Massively Multimodal and Multitask Medical Understanding},
  author={Mo, Shentong and Liang, Paul Pu},
  journal={arXiv preprint arXiv:2408.12682},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TmScore(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.List(datasets.List(datasets.Value("float64"))),
                    "references": datasets.List(datasets.List(datasets.Value("float64"))),
                }
            ),
            reference_urls=["https://zhanggroup.org/TM-score/", "https://github.com/pylelab/USalign"],
        )

    def _compute(self, predictions, references, masks=None, backend="auto"):
        scores = structure_scores(predictions, references, masks, backend=backend)
        return {key: float(scores[key].mean()) for key in ("tm_score", "rmsd", "gdt_ts")}
