"""Small models and data shared by the training tests."""

import numpy as np

import graphengine as ge


def classifier(
    dropout: float = 0.2, batch_norm: bool = False, name: str = "clf", hidden: int = 16
) -> ge.Graph:
    """x (N, 4) -> dense(hidden) [-> batch_norm] -> relu [-> dropout] -> 3 logits,
    with a training spec (Adam, accuracy)."""
    g = ge.Graph(name)
    x = g.placeholder("x", (None, 4))
    y = g.placeholder("y", (None,), "int64")
    with g.name_scope("hidden"):
        w = g.parameter("w", shape=(4, hidden), init="he_normal")
        b = g.parameter("b", np.zeros(hidden, np.float32))
        h = ge.matmul(x, w) + b
        if batch_norm:
            gamma = g.parameter("gamma", np.ones(hidden, np.float32))
            beta = g.parameter("beta", np.zeros(hidden, np.float32))
            mean = g.parameter("running_mean", np.zeros(hidden, np.float32), trainable=False)
            var = g.parameter("running_var", np.ones(hidden, np.float32), trainable=False)
            h = ge.batch_norm(h, gamma, beta, mean, var, momentum=0.8)
        h = ge.relu(h)
        if dropout:
            h = ge.dropout(h, dropout)
    with g.name_scope("out"):
        w = g.parameter("w", shape=(hidden, 3))
        b = g.parameter("b", np.zeros(3, np.float32))
        logits = ge.matmul(h, w) + b
    loss = ge.softmax_cross_entropy(logits, y, name="loss")
    g.set_training(
        loss,
        metrics=["loss", "accuracy"],
        optimizer="adam",
        learning_rate=0.02,
        batch_size=16,
        epochs=3,
        seed=7,
    )
    return g


def classifier_data(n: int = 120, seed: int = 0) -> dict[str, np.ndarray]:
    """Three classes, separable by which of the first three features is largest."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return {"x": x, "y": np.argmax(x[:, :3], axis=1).astype(np.int64)}


def parameters(graph: ge.Graph) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in graph.values.items()}


def assert_bitwise_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert value.dtype == b[name].dtype and value.shape == b[name].shape, name
        assert value.tobytes() == b[name].tobytes(), f"parameter {name} differs"
