"""docs/api.md: kdlab.fit on a scikit-learn data set, end to end (`python docs/examples/breast_cancer.py`)."""

import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

import kdlab
from kdlab.models import load_weights

x, y = load_breast_cancer(return_X_y=True)  # 569 tumours, 30 features, 2 classes
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
scaler = StandardScaler().fit(x_train)  # kdlab uses inputs as given: normalise them yourself
train, test = (scaler.transform(x_train), y_train), (scaler.transform(x_test), y_test)


def mlp(hidden, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(30, hidden), nn.ReLU(), nn.Linear(hidden, 2))


# a teacher trained with CE only, then a 4-unit student distilled from it with KD (the default method)
teacher = kdlab.fit(mlp(256, 0), None, train, eval=test, method="ce", epochs=30).student
result = kdlab.fit(mlp(4, 1), teacher, train, eval=test, epochs=20, out_dir="runs/breast_cancer_kd")
print({k: round(v, 3) for k, v in result.report.items() if k in ("teacher_acc", "student_acc", "agreement", "kl")})
print(result.history[-1]["lr"], {k: round(v, 3) for k, v in result.history[-1]["train"].items()})

# TTM's default β = 100 is CIFAR-100's: on 2 classes it is scaled, and the run says so
ttm = kdlab.fit(mlp(4, 1), teacher, train, eval=test, method="ttm", epochs=20)
print(ttm.adapted[0]["key"], ttm.adapted[0]["value"], round(ttm.report["student_acc"], 2))

# the saved weights load into the same architecture; fidelity_report takes the same numpy pair
student = load_weights(mlp(4, 1), "runs/breast_cancer_kd/model.safetensors").eval()
print(round(kdlab.fidelity_report(teacher, student, test)["agreement"], 2))
