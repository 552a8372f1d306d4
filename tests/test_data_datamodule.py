import lightning as L
import pytest
import torch

from vaesae.data.datamodule import GroundTruthDataModule


@pytest.fixture(scope="module")
def dm():
    dm = GroundTruthDataModule(
        "dsprites",
        source="procedural",
        batch_size=64,
        epoch_size=640,
        eval_size=300,
        eval_batch_size=128,
        seed=7,
    )
    dm.setup()
    return dm


def test_train_batches_shapes_dtypes_and_count(dm):
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(loader) == len(batches) == 10
    imgs, factors = dm.on_after_batch_transfer(batches[0], 0)
    assert imgs.shape == (64, 1, 64, 64) and imgs.dtype == torch.uint8
    assert factors.shape == (64, 5) and factors.dtype == torch.long
    assert imgs.device == factors.device == batches[0].device
    assert torch.equal(imgs, dm.dataset.images(factors))


def test_epochs_are_seeded_and_differ(dm):
    assert torch.equal(dm.epoch_factors(3), dm.epoch_factors(3))
    assert not torch.equal(dm.epoch_factors(3), dm.epoch_factors(4))
    other = GroundTruthDataModule("dsprites", source="procedural", epoch_size=640, seed=8)
    assert not torch.equal(dm.epoch_factors(3), other.epoch_factors(3))


def test_eval_set_is_fixed(dm):
    a = dm.eval_factors.clone()
    assert torch.equal(a, dm.eval_factors)
    fresh = GroundTruthDataModule("dsprites", source="procedural", eval_size=300, seed=99)
    assert torch.equal(a, fresh.eval_factors)  # its own seed, independent of the training seed
    chunks = list(dm.eval_batches())
    assert [len(f) for _, f in chunks] == [128, 128, 44]
    assert torch.equal(torch.cat([f for _, f in chunks]), a)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="batch_size"):
        GroundTruthDataModule(batch_size=0)
    with pytest.raises(ValueError, match="epoch_size"):
        GroundTruthDataModule(batch_size=64, epoch_size=10)


class _Probe(L.LightningModule):
    """Records what reaches training_step."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, batch_idx):
        imgs, factors = batch
        self.seen.append((imgs.dtype, tuple(imgs.shape), imgs.device.type, factors.clone()))
        return (self.w * imgs.float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_receives_gathered_images(dm):
    probe = _Probe()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(probe, datamodule=dm)
    assert len(probe.seen) == 20
    assert probe.seen[0][:3] == (torch.uint8, (64, 1, 64, 64), "cpu")
    first = torch.cat([s[3] for s in probe.seen[:10]])
    second = torch.cat([s[3] for s in probe.seen[10:]])
    assert torch.equal(first, dm.epoch_factors(0)) and torch.equal(second, dm.epoch_factors(1))
