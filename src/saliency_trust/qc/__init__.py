"""Saliency-based quality control of multi-label predictions (INFORMER; Shu et al., docs/quality-control.md).

- :mod:`.scores`: the per-image, per-class uncertainty scores: INFORMER's class distinctiveness of the class
  maps and the predictive entropy; :mod:`.augmentation`: the test-time augmentation spread;
- :mod:`.thresholds`: Youden-index decision thresholds and the per-class flagging threshold tau searched on
  the validation split;
- :mod:`.evaluation`: F1 on the test split, bootstrap resamples, paired tests and the Table 1 layout;
- :mod:`.inference` (class maps, predictions) and :mod:`.stage` (evaluation): the workflow's entry points.
"""

QC_SPLITS = ("val", "test")  # thresholds are fitted on val and applied to test
