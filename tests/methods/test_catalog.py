"""kdlab.config.method_params (what `kdlab config` and `kdlab methods` read without torch) is generated from the live
methods: it must equal what kdlab.methods.catalog generates now, and each model must be the live one's."""

import pytest

from kdlab import methods
from kdlab.config import method_params
from kdlab.methods import catalog


def test_the_generated_module_is_up_to_date():
    assert catalog.TARGET.read_text(encoding="utf-8") == catalog.render(), (
        "src/kdlab/config/method_params.py is out of date: run `python -m kdlab.methods.catalog`")


@pytest.mark.parametrize("name", methods.names())
def test_each_generated_model_is_the_live_one(name):
    live, generated = methods.get(name).Params, method_params.params(name)
    assert generated is not live and generated.__name__ == live.__name__
    assert generated.model_json_schema() == live.model_json_schema()
    assert generated().model_dump() == live().model_dump()
    assert generated.removed == live.removed
    assert method_params.SUMMARIES[name] == methods.get(name).summary


def test_the_generated_models_validate_as_the_live_ones():
    cases = [("kd", {"temperature": -1.0}), ("mlkd", {"temperatures": [1.0]}), ("sdd", {"scales": [1, 3]}),
             ("kd", {"temprature": 2.0}), ("cakd", {}), ("ofd", {"feat_weight": float("nan")})]
    for name, args in cases:
        outcomes = []
        for model in (methods.get(name).Params, method_params.params(name)):
            try:
                outcomes.append(("ok", model.model_validate(args).model_dump()))
            except ValueError as exc:
                outcomes.append(("error", [(e["loc"], e["msg"]) for e in exc.errors()]))
        assert outcomes[0] == outcomes[1], (name, args, outcomes)
    with pytest.raises(ValueError, match=r"unknown method 'kdd' \(did you mean kd"):
        method_params.params("kdd")
