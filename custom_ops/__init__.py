"""The op library's sources and build scripts. custom_ops.spec, the only
part installed as code, describes the ops to Python."""
