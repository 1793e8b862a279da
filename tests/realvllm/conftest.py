from tests.realvllm.stack import stack  # noqa: F401 (the scenarios' fixture)
