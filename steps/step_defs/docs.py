"""Steps on the worker's documentation (M0-W-1040), read from its README (`steps/readme.py`)."""

from __future__ import annotations

import pytest
from pytest_bdd import given, then

from steps.readme import Readme, models_named, says_caveat, worker_readme
from steps.verdicts import require


@given("the worker's README", target_fixture="readme")
def the_readme(request: pytest.FixtureRequest) -> Readme:
    readme = worker_readme(request.config)
    request.node.user_properties.append(("worker_readme", str(readme.path)))
    return readme


@then("a section of it on reproducibility names the models verified reproducible")
def names_models(readme: Readme, spec_ids: str) -> None:
    sections = readme.reproducibility_sections()
    require(sections, spec_ids, f"{readme.path} has no section on reproducibility")
    named = [models_named(section) for section in sections]
    require(
        any(named),
        spec_ids,
        f"the reproducibility section of {readme.path} names no model: {sections[0][:300]!r}",
    )


@then("that section says results are not guaranteed across GPUs")
def says_gpu_caveat(readme: Readme, spec_ids: str) -> None:
    sections = readme.reproducibility_sections()
    require(
        any(says_caveat(section) for section in sections),
        spec_ids,
        f"the reproducibility section of {readme.path} does not say that other GPUs or engines may give "
        f"other results: {(sections or [''])[0][:300]!r}",
    )
