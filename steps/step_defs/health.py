"""Steps on `GET /health`."""

from __future__ import annotations

from pytest_bdd import then, when

from steps.state import ScenarioState
from steps.verdicts import HEALTH_FIELDS, TOKENIZER_FACTS, matches_kind, require


@when("I GET /health")
def get_health(scenario_state: ScenarioState) -> None:
    scenario_state.get("/health")


@then("the health body has the fields:")
def health_fields(datatable: list[list[str]], scenario_state: ScenarioState, spec_ids: str) -> None:
    body = scenario_state.health_body(spec_ids)
    header, *rows = datatable
    assert header[:2] == ["field", "type"], "the table needs the columns | field | type |"
    for name, kind, *_ in rows:
        require(name in body, spec_ids, f"/health lacks the required field `{name}`: {body}")
        require(matches_kind(body[name], kind), spec_ids, f"/health `{name}` is {body[name]!r}, not {kind}")


@then("the health body describes the model file the worker serves")
def health_matches_model(scenario_state: ScenarioState, spec_ids: str) -> None:
    body = scenario_state.health_body(spec_ids)
    model = scenario_state.model
    assert model is not None, "the scenario needs a 'Given a worker serving ...' step"
    facts = model.facts
    where = f"{model.path.name} (read with gguf-py)"
    require(
        body.get("quant_kind") == facts.quant_kind,
        HEALTH_FIELDS,
        f"/health quant_kind is {body.get('quant_kind')!r}; general.file_type of {where} says {facts.quant_kind!r}",
    )
    require(
        body.get("vocab_size") in facts.accepted_vocab_sizes,
        TOKENIZER_FACTS,
        f"/health vocab_size is {body.get('vocab_size')!r}; {where} has "
        f"{' or '.join(str(size) for size in sorted(facts.accepted_vocab_sizes))} tokens",
    )
    require(
        body.get("tokenizer_kind") == facts.tokenizer_kind,
        TOKENIZER_FACTS,
        f"/health tokenizer_kind is {body.get('tokenizer_kind')!r}; {where} calls for {facts.tokenizer_kind!r}",
    )
    context = body.get("context_length")
    if context is not None and facts.context_length is not None:
        require(
            0 < context <= facts.context_length,
            HEALTH_FIELDS,
            f"/health context_length is {context}; {where} allows at most {facts.context_length}",
        )
