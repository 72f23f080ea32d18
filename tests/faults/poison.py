"""A classifier that kills the process scoring it when a row's first feature is POISON: a
user's model that crashes on some input (a native extension's segfault, an allocation the
kernel answers with the OOM killer)."""

import os
import signal

import numpy as np
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

POISON = 99.0
ALLOWED = f"{__name__}.CrashesOnPoison"  # for UNPICKLE_EXTRA_ALLOWED


class CrashesOnPoison(DecisionTreeClassifier):  # a forest would take scoring's fast path
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if np.any(np.asarray(X)[:, 0] == POISON):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().predict_proba(X)


def fitted() -> CrashesOnPoison:
    iris = load_iris()
    return CrashesOnPoison(random_state=0).fit(iris.data, iris.target)
