from tests.realvllm.stack import stack  # noqa: F401 (the scenarios' fixture)

# The stand-in kernel package is SGLang's server's, not a test module.
collect_ignore = ["sgl_kernel"]
