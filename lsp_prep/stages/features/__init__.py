"""Stage ``features``: texture features of the upper face (:mod:`.measure`), and the head
calibrated and tracked again on them (:mod:`.stage`)."""
