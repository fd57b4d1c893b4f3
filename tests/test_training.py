import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from illume_core.training import (
    NonFiniteLossError,
    ParamGroup,
    TrainConfig,
    flatten_state,
    lr_factor,
    optimizer_state,
    train_loop,
    unflatten_state,
)


def _problem(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
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
    import illume_core.training as training

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
        st = train_loop(model, [ParamGroup("all", list(model.parameters()), 3e-2)], data, cfg, loss_fn=loss_fn)
        assert all(p.dtype == torch.float32 for p in model.parameters())
        losses[precision] = st.losses
    assert losses["bf16"][-1] < 0.2 * losses["bf16"][0]
    # the same run in another precision: the first step's loss agrees to bf16's resolution
    assert losses["bf16"][0] == pytest.approx(losses["fp32"][0], rel=2e-2)
    assert losses["bf16"] != losses["fp32"]  # the autocast really ran


def test_resume_continues_exactly(tmp_path):
    cfg = TrainConfig(steps=20, warmup_steps=3)
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
        train_loop(
            model,
            [ParamGroup("all", list(model.parameters()), 1e-2)],
            data,
            TrainConfig(steps=10),
            loss_fn=bad_loss,
            progress=progress,
            checkpoint_every=1,
            on_checkpoint=lambda s: saved.append(s.step),
        )
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
