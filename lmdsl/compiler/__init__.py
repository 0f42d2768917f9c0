"""The compiler: optimizers that choose each fuzzy function's demos and instructions."""

from lmdsl.compiler.artifact import write_artifact
from lmdsl.compiler.base import (
    Budget,
    BudgetExhausted,
    BudgetWarning,
    Candidate,
    Compiled,
    Optimizer,
    UnusedLabelsWarning,
)
from lmdsl.compiler.decorator import CompileConfig, compile_program, optimize
from lmdsl.compiler.few_shot import BootstrapFewShot, LabeledFewShot, RandomSearch
from lmdsl.compiler.finetune import BetterTogether, BootstrapFinetune
from lmdsl.compiler.gepa import GEPA
from lmdsl.compiler.knn import KNNFewShot
from lmdsl.compiler.mipro import MIPRO

__all__ = [
    "BetterTogether",
    "BootstrapFewShot",
    "BootstrapFinetune",
    "Budget",
    "BudgetExhausted",
    "Candidate",
    "CompileConfig",
    "Compiled",
    "GEPA",
    "KNNFewShot",
    "LabeledFewShot",
    "MIPRO",
    "Optimizer",
    "RandomSearch",
    "UnusedLabelsWarning",
    "BudgetWarning",
    "compile_program",
    "optimize",
    "write_artifact",
]
