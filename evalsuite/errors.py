"""The base of every error a user can cause and fix (bad suite file, unknown name, missing model, ...).
The CLI prints these as one plain line and exits 2; anything else keeps its traceback."""


class UserError(Exception):
    pass


def user_errors() -> tuple[type[Exception], ...]:
    from evalsuite.quant_schemes.algorithms import UnknownAlgorithmError
    from evalsuite.quant_schemes.backends import KernelUnavailableError
    from evalsuite.quant_schemes.checkpoints import CheckpointError
    from evalsuite.quant_schemes.export import ExportError
    from evalsuite.quant_schemes.scheme import UnknownSchemeError

    # quant_schemes does not import the harness (dependencies point one way): its user errors are listed here
    return (
        UserError,
        UnknownSchemeError,
        UnknownAlgorithmError,
        KernelUnavailableError,
        CheckpointError,
        ExportError,
    )
