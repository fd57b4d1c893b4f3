import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from train_helpers import train_checkpointing_every_step

from illume_core.train.loop import (
    MuonAdamW,
    NonFiniteLossError,
    ParamGroup,
    TrainConfig,
    flatten_state,
    lr_factor,
    optimizer_state,
    orthogonalize,
    train_loop,
    unflatten_state,
)


class _Net(torch.nn.Sequential):
    """The problem's MLP; its middle matrix is the one hidden matrix (Muon's)."""

    def __init__(self):
        super().__init__(
            torch.nn.Linear(8, 16),
            torch.nn.GELU(),
            torch.nn.Linear(16, 16),
            torch.nn.GELU(),
            torch.nn.Linear(16, 1),
        )

    def hidden_matrices(self):
        return [self[2].weight]


def _problem(seed=0):
    torch.manual_seed(seed)
    model = _Net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, :1] * 2 - x[:, 1:2]).detach()

    def stream():
        i = 0
        while True:
            idx = torch.arange(i, i + 16) % 256
            i += 16
            yield x[idx], y[idx]

    def loss_fn(m, b):
        return torch.nn.functional.mse_loss(m(b[0]), b[1])

    return model, stream(), loss_fn


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(0.1)
    mids = [lr_factor(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(mids, mids[1:], strict=False))


def test_loss_falls():
    model, data, loss_fn = _problem()
    cfg = TrainConfig(steps=60, warmup_steps=5)
    st = train_loop(model, [ParamGroup("all", list(model.parameters()), 3e-2)], data, cfg, loss_fn=loss_fn)
    assert st.step == 60 and st.losses[-1] < 0.2 * st.losses[0]


def test_auto_precision_is_bf16_exactly_where_the_cpu_multiplies_it_natively(monkeypatch):
    import illume_core.train.loop as training

    cpu = torch.device("cpu")
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(training, "cpu_has_bf16", lambda native=native: native)
        assert training.autocast_dtype(cpu, "auto") is expected
        assert training.autocast_dtype(cpu, "fp32") is None  # asked for: kept whatever the CPU
        assert training.autocast_dtype(cpu, "bf16") is torch.bfloat16


def test_bf16_autocast_learns_like_fp32_and_keeps_fp32_master_weights():
    losses = {}
    for precision in ("fp32", "bf16"):
        model, data, loss_fn = _problem()
        cfg = TrainConfig(steps=60, warmup_steps=5, precision=precision)
        st = train_loop(
            model, [ParamGroup("all", list(model.parameters()), 3e-2)], data, cfg, loss_fn=loss_fn
        )
        assert all(p.dtype == torch.float32 for p in model.parameters())
        losses[precision] = st.losses
    assert losses["bf16"][-1] < 0.2 * losses["bf16"][0]
    # the same run in another precision: the first step's loss agrees to bf16's resolution
    assert losses["bf16"][0] == pytest.approx(losses["fp32"][0], rel=2e-2)
    assert losses["bf16"] != losses["fp32"]  # the autocast really ran


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_continues_exactly(tmp_path, optimizer):
    cfg = TrainConfig(steps=20, warmup_steps=3, optimizer=optimizer)
    m1, d1, lf = _problem()
    train_loop(m1, [ParamGroup("all", list(m1.parameters()), 1e-2)], d1, cfg, loss_fn=lf)

    m2, d2, lf = _problem()
    saved = {}

    def keep(state):
        if state.step == 10:
            tensors, skel = flatten_state(optimizer_state(state))
            save_file(tensors, tmp_path / "opt.safetensors")
            (tmp_path / "opt.json").write_text(json.dumps(skel))
            saved["model"] = {k: v.clone() for k, v in m2.state_dict().items()}
            raise KeyboardInterrupt  # the process dies right after its checkpoint

    with pytest.raises(KeyboardInterrupt):
        train_loop(
            m2,
            [ParamGroup("all", list(m2.parameters()), 1e-2)],
            d2,
            cfg,
            loss_fn=lf,
            checkpoint_every=10,
            on_checkpoint=keep,
        )
    m3, d3, lf = _problem()
    m3.load_state_dict(saved["model"])
    for _ in range(10):  # the stream position after 10 steps
        next(d3)
    state = unflatten_state(
        load_file(tmp_path / "opt.safetensors"), json.loads((tmp_path / "opt.json").read_text())
    )
    st = train_loop(m3, [ParamGroup("all", list(m3.parameters()), 1e-2)], d3, cfg, loss_fn=lf, state=state)
    assert st.step == 20 and len(st.losses) == 10
    for a, b in zip(m1.parameters(), m3.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_nan_loss_stops_without_checkpoint():
    model, data, _ = _problem()
    calls, saved = [], []

    def bad_loss(m, b):
        loss = torch.nn.functional.mse_loss(m(b[0]), b[1])
        return loss * float("nan") if len(calls) >= 3 else loss

    def progress(step, loss, lr):
        calls.append(step)

    with pytest.raises(NonFiniteLossError, match="step 3.*no checkpoint was written"):
        train_checkpointing_every_step(model, data, 10, bad_loss, progress, saved)
    assert calls == [1, 2, 3]
    assert saved == [1, 2, 3]  # the good steps were saved; the NaN step (index 3) never was


def test_nothing_trainable_is_a_clear_error():
    model, data, lf = _problem()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_loop(
            model, [ParamGroup("all", list(model.parameters()), 1e-2)], data, TrainConfig(steps=1), loss_fn=lf
        )


def test_flatten_state_round_trip():
    obj = {"a": [1, 2.5, None, "x"], 3: (torch.ones(2), {"b": torch.arange(3)}), "flag": True}
    tensors, skel = flatten_state(obj)
    back = unflatten_state(tensors, json.loads(json.dumps(skel)))
    assert back["a"] == [1, 2.5, None, "x"] and back["flag"] is True
    torch.testing.assert_close(back[3][1]["b"], torch.arange(3))
    with pytest.raises(TypeError, match="without pickle"):
        flatten_state({"f": object()})


def test_orthogonalize_brings_every_singular_value_near_one():
    g = torch.randn(48, 160, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 1, 160)
    for m in (g, g.T):  # wide and tall
        sv = torch.linalg.svdvals(orthogonalize(m))
        assert orthogonalize(m).shape == m.shape
        assert 0.6 < float(sv.min()) and float(sv.max()) < 1.25, sv
    # the directions are those of the SVD's U V^T
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = torch.nn.functional.cosine_similarity(orthogonalize(g).flatten(), (u @ vh).flatten(), dim=0)
    assert float(cos) > 0.9


def test_muon_trains_the_hidden_matrices_and_adamw_the_rest():
    model, data, lf = _problem()
    cfg = TrainConfig(steps=150, warmup_steps=5, optimizer="muon")
    st = train_loop(model, [ParamGroup("all", list(model.parameters()), 1e-2)], data, cfg, loss_fn=lf)
    assert isinstance(st.optimizer, MuonAdamW)
    muon = [p for g in st.optimizer.param_groups if g["muon"] for p in g["params"]]
    assert [id(p) for p in muon] == [id(model[2].weight)]
    assert "momentum_buffer" in st.optimizer.state[model[2].weight]
    assert "exp_avg" in st.optimizer.state[model[0].weight]
    assert sum(st.losses[-10:]) / 10 < 0.1 * sum(st.losses[:10]) / 10
    with pytest.raises(ValueError, match="hidden matrices"):
        plain = torch.nn.Linear(8, 1)
        train_loop(plain, [ParamGroup("all", list(plain.parameters()), 1e-2)], data, cfg, loss_fn=lf)
