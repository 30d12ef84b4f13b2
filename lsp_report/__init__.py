"""``lsp report``: a dataset or a training run at a glance, as one self-contained HTML page.

* :mod:`lsp_report.dataset`: what prep found in a clip (frames with landmarks and feature
  map, head pose, focal search, misfit, shoulders, audio-visual sync, candidates, split,
  warnings); reads the file through :mod:`lsp_prep.dataset.reader`. No torch import.
* :mod:`lsp_report.run`: what training did (loss curves of every stage, validation
  metrics, the renderer's sample sheets, ``lsp eval`` results) and the run's dataset.
* :mod:`lsp_report.page`: the HTML page, images inlined, readable offline.
"""
