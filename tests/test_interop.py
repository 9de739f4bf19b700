"""PyTorch weights in the TRADES / RobustBench layouts (WideResNet, ResNet-18, PreActResNet-18,
input normalization), into our models and back."""
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from robustwidth import interop, models  # noqa: E402
from tests import helpers  # noqa: E402


def _jax_logits(model, x):
  return np.asarray(jax.jit(models.model_logits_fn(model))(x))


def _torch_logits(net, x):
  with torch.no_grad():
    return net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


@pytest.mark.parametrize("depth,width,base,in_channels", [(10, 2, 3, 1), (16, 1, 4, 3)])
def test_torch_weights_give_the_same_logits(depth, width, base, in_channels):
  net = helpers.torch_wide_resnet(depth, width, base, in_channels)
  model = interop.from_torch_state_dict(net.state_dict())
  assert (model.depth, model.width) == (depth, width)
  x = np.random.default_rng(0).uniform(0, 1, (6, 8, 8, in_channels)).astype(np.float32)
  np.testing.assert_allclose(_jax_logits(model, x), _torch_logits(net, x), atol=1e-4)


def test_trades_extras_are_ignored_and_mismatches_named():
  net = helpers.torch_wide_resnet()
  state = {"module." + k: v for k, v in net.state_dict().items()}        # DataParallel prefix
  state.update({"module.sub_block1.layer.0.conv1.weight": torch.zeros(6, 3, 3, 3)})  # TRADES
  model = interop.from_torch_state_dict(state)
  x = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32)
  np.testing.assert_allclose(_jax_logits(model, x), _torch_logits(net, x), atol=1e-4)
  del state["module.fc.bias"]
  with pytest.raises(ValueError, match="fc.bias"):
    interop.from_torch_state_dict(state)
  wrong = models.WideResNet(16, 2, 10, in_channels=1, base_channels=3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="does not match"):
    interop.load_torch_state_dict(wrong, net.state_dict())


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_export_round_trip(parameterization):
  ours = models.WideResNet(10, 2, 10, in_channels=1, base_channels=3,
                           parameterization=parameterization, rngs=nnx.Rngs(3))
  exported = interop.to_torch_state_dict(ours)
  net = interop.torch_model("wide_resnet", 10, depth=10, width=2, in_channels=1,
                            base_channels=3)
  net.load_state_dict(exported)   # strict: every key of the PyTorch layout, nothing else
  net.eval()
  x = np.random.default_rng(2).uniform(0, 1, (5, 8, 8, 1)).astype(np.float32)
  np.testing.assert_allclose(_torch_logits(net, x), _jax_logits(ours, x), atol=1e-4)
  back = interop.from_torch_state_dict(exported, parameterization=parameterization)
  for a, b in zip(*(nnx.to_flat_state(nnx.state(m)) for m in (ours, back))):
    assert a[0] == b[0]
    np.testing.assert_allclose(np.asarray(a[1][...]), np.asarray(b[1][...]), rtol=1e-6)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model_state_dict"])
def test_checkpoint_files_of_each_layout_load(tmp_path, wrap):
  # A bare state_dict (TRADES), {"state_dict": ...} (RobustBench) and the paper authors'
  # {"model_state_dict": ..., "optimizer_state_dict": ..., "epoch": ...}.
  net = helpers.torch_wide_resnet()
  optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
  checkpoint = {"plain": net.state_dict(), "state_dict": {"state_dict": net.state_dict()},
                "model_state_dict": {"model_state_dict": net.state_dict(),
                                     "optimizer_state_dict": optimizer.state_dict(),
                                     "epoch": 3}}[wrap]
  torch.save(checkpoint, tmp_path / "ckpt.pt")
  model = interop.load_torch_checkpoint(str(tmp_path / "ckpt.pt"))
  x = np.random.default_rng(3).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32)
  np.testing.assert_allclose(_jax_logits(model, x), _torch_logits(net, x), atol=1e-4)


def test_a_training_pass_moves_batch_norm_statistics_as_pytorch_does():
  # PyTorch normalizes with the biased batch variance and folds the unbiased one (n / (n − 1))
  # into running_var with momentum 0.1; the 2-example batch makes n / (n − 1) large at the
  # last 2×2 stage (n = 8).
  net = helpers.torch_wide_resnet().train()
  model = interop.from_torch_state_dict(net.state_dict())
  x = np.random.default_rng(4).uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
  graphdef, params, state = models.split(model)
  logits, state = models.apply(graphdef, params, state, x, train=True)
  np.testing.assert_allclose(np.asarray(logits), _torch_logits(net, x), atol=1e-4)
  theirs = net.state_dict()
  nnx.update(model, state)
  for key, value in interop.to_torch_state_dict(model).items():
    if key.endswith(("running_mean", "running_var")):
      np.testing.assert_allclose(value.numpy(), theirs[key].numpy(), rtol=1e-5, atol=1e-6)


def test_missing_torch_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match=r"pip install -e \.\[torch\]"):
    interop.to_torch_state_dict(models.WideResNet(10, 1, base_channels=1, rngs=nnx.Rngs(0)))


RESNETS = [("resnet18", {}), ("preact_resnet18", {}), ("preact_resnet18", {"final_bn": True}),
           ("preact_resnet18", {"final_bn": True, "preactivated_shortcut": True})]


@pytest.mark.parametrize("arch,options", RESNETS)
def test_resnet_weights_give_the_same_logits(arch, options):
  """RobustBench's ResNet-18 and PreActResNet-18 variants, 4 base channels, on 32×32 inputs
  (where their 4×4 average pool is our global one)."""
  torch.manual_seed(1)
  net = helpers.randomized(interop.torch_model(arch, 10, base_channels=4, **options))
  model = interop.from_torch_state_dict(
      net.state_dict(), arch=arch,
      preactivated_shortcut=options.get("preactivated_shortcut", False))
  x = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(_jax_logits(model, x), _torch_logits(net, x), atol=1e-4)
  back = interop.torch_model(arch, 10, base_channels=4, **options)
  back.load_state_dict(interop.to_torch_state_dict(model))     # strict: the same layout
  np.testing.assert_allclose(_torch_logits(back.eval(), x), _torch_logits(net, x), atol=1e-5)


def test_normalization_inside_the_model():
  """A PyTorch model that normalizes its [0, 1] input with constants, as RobustBench's do."""
  mean, std = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]
  inner = helpers.torch_wide_resnet(depth=10, width=1, base=2, in_channels=3)

  def net(z):
    return inner((z - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))

  model = interop.from_torch_state_dict(inner.state_dict(), mean=mean, std=std)
  assert isinstance(model, models.Normalized)
  x = np.random.default_rng(3).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(_jax_logits(model, x), _torch_logits(net, x), atol=1e-4)
  # The normalization constants are model state, not trainable parameters.
  _, params, _ = models.split(model)
  assert models.count_params(params) == models.count_params(
      models.split(interop.from_torch_state_dict(inner.state_dict()))[1])
  with pytest.raises(ValueError, match="both mean and std"):
    interop.from_torch_state_dict(inner.state_dict(), mean=mean)


def test_wrong_architecture_is_named():
  state = interop.torch_model("resnet18", 10, base_channels=2).state_dict()
  with pytest.raises(ValueError, match="does not match a PreActResNet-18"):
    interop.from_torch_state_dict(state, arch="preact_resnet18")
  with pytest.raises(ValueError, match="Not a wide_resnet state_dict"):
    interop.from_torch_state_dict(state)
  with pytest.raises(ValueError, match="Unknown architecture"):
    interop.from_torch_state_dict(state, arch="vit")


def test_checkpoint_files_load_without_running_code(tmp_path):
  net = helpers.torch_wide_resnet()
  path = str(tmp_path / "model.pt")
  torch.save({"state_dict": net.state_dict(), "epoch": 3}, path)
  model = interop.load_torch_checkpoint(path)
  x = np.random.default_rng(4).uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
  np.testing.assert_allclose(_jax_logits(model, x), _torch_logits(net, x), atol=1e-4)
  # A pickled object (which a plain torch.load would construct, running its code) is refused.
  torch.save({"state_dict": net.state_dict(), "hook": _Payload()}, path)
  with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
    interop.load_torch_checkpoint(path)


class _Payload:
  pass
