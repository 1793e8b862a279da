# The stand-in kernel package is SGLang's server's, not a test module.
collect_ignore = ["sgl_kernel"]
