"""TTM's CIFAR-100 β = 100 on 2- and 3-class data (docs/methods/ttm.md): `python docs/examples/ttm_few_classes.py bc`
(breast cancer) or `... wine`. Prints the CE student, then TTM students at β = 100, the C/100-scaled β and others,
three seeds each; "nan" is a run stopped by a non-finite loss. Needs scikit-learn (the test extra)."""

import sys

import torch
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

import kdlab

X, y = (load_breast_cancer if sys.argv[1] == "bc" else load_wine)(return_X_y=True)
xtr, xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
scaler = StandardScaler().fit(xtr)
train, test = (scaler.transform(xtr), ytr), (scaler.transform(xte), yte)
C = int(y.max()) + 1


def mlp(seed, hidden):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(X.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, C))


def acc(method, seed, teacher=None, **args):
    try:
        res = kdlab.fit(mlp(seed + 1, 16), teacher, train, test, method=method, method_args=args, epochs=10,
                        seed=seed)
        return round(res.report["student_acc"], 1)
    except FloatingPointError:
        return "nan"


print("ce student", [acc("ce", s) for s in range(3)])
teacher = kdlab.fit(mlp(0, 128), None, train, test, method="ce", epochs=30, lr=0.05).student
for method, betas in (("ttm", [100, 100 * C / 100, 100 * (C / 100) ** 0.9, 10]), ("wttm", [3.0, 3 * C / 100])):
    for beta in betas:
        print(method, "beta", round(beta, 2), [acc(method, s, teacher, beta=beta, gamma=0.1) for s in range(3)])
