"""common.handlers.early_stopping: the paper's soft Dice and its stopping rule (gain of more than 0.001 over the
best score within five validations), on real Ignite engines and a MONAI bundle config."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping
from monai.bundle import ConfigParser
from monai.handlers import from_engine
from monai.losses import DiceLoss

from common.handlers.early_stopping import MeanSoftDice, SoftDicePlateauStopping, soft_dice


def stopped_after(scores, handler=None) -> int:
    """Train for len(scores) dummy epochs, validating after each with the scripted score; the epoch training ended."""
    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def scripted(engine):
        engine.state.metrics["val_soft_dice"] = scores[trainer.state.epoch - 1]

    handler = handler or SoftDicePlateauStopping(trainer=trainer)
    if isinstance(handler, EarlyStopping):
        handler.trainer = trainer
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, handler)
    else:
        handler.attach(evaluator)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
    trainer.run([0], max_epochs=len(scores))
    return trainer.state.epoch


def test_plateau_rule():
    assert stopped_after([0.5] + [0.5009] * 10) == 6  # a gain of 0.0009 is no improvement: 5 in a row after epoch 1
    assert stopped_after([0.5, 0.5011] + [0.5011] * 10) == 7  # 0.0011 restarts the count
    assert stopped_after([0.6] + [0.5] * 10) == 6  # a drop counts too
    assert stopped_after([0.5 + 0.002 * i for i in range(12)]) == 12  # steady gains: never stops
    # gains add up against the best score: 0.5006 is not an improvement, 0.5012 (0.0012 over 0.5) is
    climbing = [0.5, 0.5006, 0.5012] + [0.5012] * 10
    assert stopped_after(climbing) == 8
    per_step = EarlyStopping(5, lambda e: e.state.metrics["val_soft_dice"], Engine(lambda e, b: None), 0.001)
    assert stopped_after(climbing, per_step) == 6  # Ignite's default (cumulative=False) compares step to step


def test_trainer_and_metric_errors():
    handler = SoftDicePlateauStopping()
    evaluator = Engine(lambda e, b: None)
    handler.attach(evaluator)
    with pytest.raises(RuntimeError, match="set_trainer"):
        evaluator.run([0])
    handler.set_trainer(Engine(lambda e, b: None))
    evaluator = Engine(lambda e, b: None)
    handler.attach(evaluator)
    with pytest.raises(KeyError, match="no metric 'val_soft_dice'"):
        evaluator.run([0])
    with pytest.raises(ValueError, match="patience"):
        SoftDicePlateauStopping(patience=0)


def test_soft_dice_by_hand():
    p = torch.tensor([[0.9, 0.6, 0.2, 0.1], [0.1, 0.4, 0.8, 0.9]]).reshape(1, 2, 4)
    g = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]]).reshape(1, 2, 4)
    # background 2*1.5/(1.8+2), class 1 2*1.7/(2.2+2)
    expected = torch.tensor([[3.0 / 3.8, 3.4 / 4.2]])
    torch.testing.assert_close(soft_dice(p, g, include_background=True), expected)
    torch.testing.assert_close(soft_dice(p, g.argmax(1, keepdim=True)), expected[:, 1:])  # class indices
    loss = DiceLoss(smooth_nr=0, smooth_dr=0, reduction="none")(p, g).reshape(1, 2)
    torch.testing.assert_close(1 - loss, expected)  # MONAI's soft Dice loss, the same quantity
    empty = torch.zeros_like(g)
    empty[:, 0] = 1
    assert math.isnan(float(soft_dice(p, empty)[0, 0]))  # class 1 absent from the reference
    with pytest.raises(ValueError, match="probabilities in"):
        soft_dice(p * 3 - 1, g)  # logits
    with pytest.raises(ValueError, match="C >= 2"):
        soft_dice(p.argmax(1, keepdim=True).float(), g)  # an argmax


def test_mean_soft_dice_handler():
    p = torch.tensor([[0.9, 0.6, 0.2, 0.1], [0.1, 0.4, 0.8, 0.9]])  # one case, channel first, as decollated
    cases = [{"pred_prob": p, "label": torch.tensor([[0, 0, 1, 1]])}, {"pred_prob": p, "label": torch.ones(1, 4)}]
    engine = Engine(lambda e, case: [case])
    MeanSoftDice(output_transform=from_engine(["pred_prob", "label"])).attach(engine, "val_soft_dice")
    engine.run(cases)
    # class 1: 3.4/4.2 on the first case, 2*2.2/(2.2+4) on the second
    assert engine.state.metrics["val_soft_dice"] == pytest.approx((3.4 / 4.2 + 4.4 / 6.2) / 2)
    assert engine.state.metric_details["val_soft_dice"].shape == (2, 1)


def test_bundle_config_recipe():
    """The module's recipe in a MONAI config: trainer and evaluator refer to each other through set_trainer."""
    config = {
        "imports": ["$import torch", "$import monai", "$import common.handlers.early_stopping"],
        "network": "$torch.nn.Conv2d(1, 2, 1)",
        "data": "$[{'image': torch.rand(1, 1, 4, 4), 'label': torch.randint(0, 2, (1, 1, 4, 4))}]",
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "CopyItemsd", "keys": "pred", "names": "pred_prob"},
                {"_target_": "AsDiscreted", "keys": ["pred", "label"], "argmax": [True, False], "to_onehot": 2},
            ],
        },
        "validate": {
            "early_stopping": {
                "_target_": "common.handlers.early_stopping.SoftDicePlateauStopping",
                "metric_name": "val_soft_dice",
            },
            "handlers": ["@validate#early_stopping"],
            "evaluator": {
                "_target_": "SupervisedEvaluator",
                "device": "cpu",
                "val_data_loader": "@data",
                "network": "@network",
                "postprocessing": "@postprocessing",
                "key_val_metric": {
                    "val_soft_dice": {
                        "_target_": "common.handlers.early_stopping.MeanSoftDice",
                        "output_transform": "$monai.handlers.from_engine(['pred_prob', 'label'])",
                    }
                },
                "val_handlers": "@validate#handlers",
            },
        },
        "train": {
            "trainer": {
                "_target_": "SupervisedTrainer",
                "device": "cpu",
                "max_epochs": 20,
                "train_data_loader": "@data",
                "network": "@network",
                "optimizer": "$torch.optim.SGD(@network.parameters(), lr=0.0)",
                "loss_function": "$lambda pred, label: (pred * 0).sum()",
                "train_handlers": [
                    {"_target_": "ValidationHandler", "validator": "@validate#evaluator", "interval": 1}
                ],
            }
        },
        "initialize": ["$@validate#early_stopping.set_trainer(@train#trainer)"],
        "run": ["$@train#trainer.run()"],
    }
    parser = ConfigParser(config)
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("run")
    assert parser.get_parsed_content("train#trainer").state.epoch == 6  # constant score: 1 + 5 validations
