"""Concrete ML on MNIST, measured on this machine: the anchors of `hecnn experiment frontier`.

Two networks, each trained here with PyTorch, compiled by Concrete ML, simulated on the
full test set (`fhe="simulate"`) and run on really encrypted test images (`fhe="execute"`,
one image per call, keys generated first and not timed):

* Ishiyama et al.'s paper CNN (the architecture hecnn's `paper-cnn` builds): Conv 5x5/2 (5)
  -> BN -> ReLU -> Conv 5x5/2 (50) -> BN -> ReLU -> Dense 10; post-training quantisation
  with n_bits 6 and approximate rounding of accumulators to 6 bits.
* A 3-bit quantisation-aware CNN in Concrete ML's own style (Brevitas, as its TinyCNN
  example, scaled to 28x28): QuantIdentity -> QuantConv 5x5/2 (8) -> ReLU -> QuantIdentity
  -> QuantConv 5x5/2 (16) -> ReLU -> QuantIdentity -> QuantLinear 10, every weight and
  activation 3 bits, approximate rounding to 6 bits.

Run through measure.sh (which makes the virtual environment); writes JSON that
`hecnn experiment frontier --concrete-ml FILE` reads.
"""

import argparse
import datetime
import gzip
import json
import os
import platform
import time

import numpy as np
import torch
from torch import nn

import brevitas.nn as qnn
import concrete.ml
from concrete.ml.torch.compile import compile_brevitas_qat_model, compile_torch_model

ROUNDING = {"n_bits": 6, "method": "approximate"}


def read_idx(path):
    """An MNIST idx file (gzip): images as float32 in [0, 1], shape (n, 1, 28, 28), or labels."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic == 2051:
        n, rows, cols = (int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(3))
        pixels = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 1, rows, cols)
        return pixels.astype(np.float32) / 255.0
    if magic == 2049:
        return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)
    raise ValueError(f"{path}: not an MNIST idx file (magic {magic})")


def load(folder):
    split = lambda name: (  # noqa: E731
        read_idx(os.path.join(folder, f"{name}-images-idx3-ubyte.gz")),
        read_idx(os.path.join(folder, f"{name}-labels-idx1-ubyte.gz")),
    )
    return split("train"), split("t10k")


class PaperCnn(nn.Module):
    """Ishiyama, Suzuki, Yamana 2020, with ReLU: 720 + 800 activations."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 5, 5, stride=2),
            nn.BatchNorm2d(5),
            nn.ReLU(),
            nn.Conv2d(5, 50, 5, stride=2),
            nn.BatchNorm2d(50),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(800, 10),
        )

    def forward(self, x):
        return self.body(x)


class QatCnn(nn.Module):
    """Every weight and activation quantised to `bits` (Brevitas)."""

    def __init__(self, bits=3):
        super().__init__()
        self.q1 = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
        self.conv1 = qnn.QuantConv2d(1, 8, 5, stride=2, weight_bit_width=bits)
        self.q2 = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
        self.conv2 = qnn.QuantConv2d(8, 16, 5, stride=2, weight_bit_width=bits)
        self.q3 = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
        self.fc = qnn.QuantLinear(256, 10, bias=True, weight_bit_width=bits)

    def forward(self, x):
        x = self.q1(x)
        x = self.q2(torch.relu(self.conv1(x)))
        x = self.q3(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


def train(model, images, labels, epochs):
    """Adam, cross-entropy, batches of 128, the learning rate decayed along a cosine."""
    torch.manual_seed(1)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * ((len(x) + 127) // 128)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 128):
            batch = order[start : start + 128]
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
            schedule.step()
        print(f"  epoch {epoch + 1}: loss {loss.item():.4f}", flush=True)
    model.eval()
    return model


def measure(name, quantized, images, labels, encrypted):
    """Simulated accuracy on every test image, and the latency of `encrypted` real ones."""
    started = time.time()
    predicted = np.concatenate(
        [
            quantized.forward(images[i : i + 500], fhe="simulate").argmax(1)
            for i in range(0, len(images), 500)
        ]
    )
    accuracy = float((predicted == labels).mean())
    print(f"{name}: simulated {100 * accuracy:.2f}% on {len(images)} images "
          f"({time.time() - started:.0f} s)", flush=True)
    circuit = quantized.fhe_circuit
    started = time.time()
    circuit.keygen()
    keygen = time.time() - started
    print(f"{name}: keys in {keygen:.1f} s", flush=True)
    latencies, agreeing = [], 0
    for i in range(encrypted):
        started = time.time()
        logits = quantized.forward(images[i : i + 1], fhe="execute")
        latencies.append(time.time() - started)
        agreeing += int(logits.argmax(1)[0] == predicted[i])
        print(f"{name}: encrypted image {i + 1} in {latencies[-1]:.1f} s", flush=True)
    statistics = getattr(circuit, "statistics", None) or {}
    pbs = statistics.get("programmable_bootstrap_count")
    return {
        "name": name,
        "accuracy": accuracy,
        "test_images": len(images),
        "latencies_s": latencies,
        "pbs": int(pbs) if pbs is not None else None,
        "encrypted_equal_to_simulated": agreeing,
        "keygen_s": keygen,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of the MNIST idx .gz files")
    parser.add_argument("--encrypted", type=int, default=2, help="images run encrypted")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs per network")
    parser.add_argument("--output", required=True, help="the JSON written")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    (train_x, train_y), (test_x, test_y) = load(args.data)
    calibration = torch.from_numpy(train_x[:1000])
    models = []

    print("paper CNN: training (float)", flush=True)
    paper = train(PaperCnn(), train_x, train_y, args.epochs)
    quantized = compile_torch_model(
        paper, calibration, n_bits=6, rounding_threshold_bits=ROUNDING
    )
    models.append(
        measure("paper CNN, ReLU, n_bits 6, rounding 6", quantized, test_x, test_y, args.encrypted)
    )

    print("3-bit QAT CNN: training (Brevitas)", flush=True)
    qat = train(QatCnn(3), train_x, train_y, args.epochs)
    quantized = compile_brevitas_qat_model(qat, calibration, rounding_threshold_bits=ROUNDING)
    models.append(
        measure("3-bit QAT CNN, rounding 6", quantized, test_x, test_y, args.encrypted)
    )

    results = {
        "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "concrete_ml": concrete.ml.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "models": models,
    }
    temporary = args.output + ".partial"
    with open(temporary, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(temporary, args.output)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
