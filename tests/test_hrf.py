"""berg's HRF kernels are nilearn's, sample for sample (nilearn is a test dependency only)."""

import numpy as np
import pytest
from nilearn.glm.first_level import glover_hrf, spm_hrf

from berg.hrf import hrf_kernel


@pytest.mark.parametrize("tr, oversampling", [(2.0, 1), (0.8, 50), (1.49, 50), (1.0, 16)])
@pytest.mark.parametrize("name, reference", [("spm", spm_hrf), ("glover", glover_hrf)])
def test_kernels_equal_nilearn(name, reference, tr, oversampling):
    ours = hrf_kernel(name, tr, oversampling)
    theirs = reference(tr, oversampling)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert ours.sum() == pytest.approx(1.0) and 3.0 < np.argmax(ours) * tr / oversampling < 7.0  # peak about 5 s
