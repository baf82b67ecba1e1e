"""The harness's variable-shape forwards leave cuDNN's attention out on CUDA (it plans every new shape on the
host) and change nothing elsewhere; the flags come back after."""

import torch

from evalsuite.sdpa_backends import variable_shape_attention


def _flags():
    b = torch.backends.cuda
    return b.cudnn_sdp_enabled(), b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled()


def test_on_cuda_cudnn_is_left_out_and_restored_after():
    default = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)  # as torch 2.11 ships it, whatever this torch's default
    try:
        with variable_shape_attention(torch.device("cuda")):
            assert _flags() == (False, True, True, True)
        assert _flags()[0]
    finally:
        torch.backends.cuda.enable_cudnn_sdp(default)


def test_off_cuda_nothing_changes():
    before = _flags()
    with variable_shape_attention(torch.device("cpu")):
        assert _flags() == before
