"""Train a two-layer network with AdamW on a toy task and print the falling loss.

    python examples/two_layer.py
"""

import numpy as np

import ferrolm as fl
import ferrolm.functional as F


class Mlp(fl.nn.Module):
    def __init__(self, width: int = 64):
        self.fc1 = fl.Linear(2, width, seed=1)
        self.fc2 = fl.Linear(width, 4, seed=2)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


def main() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, size=(512, 2)).astype(np.float32)
    quadrant = (points[:, 0] > 0).astype(np.int64) + 2 * (points[:, 1] > 0)
    model = Mlp()
    opt = fl.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    x = fl.tensor(points)
    for step in range(301):
        loss = F.cross_entropy(model(x), quadrant)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    with fl.no_grad():
        accuracy = (model(x).numpy().argmax(-1) == quadrant).mean()
    print(f"accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
