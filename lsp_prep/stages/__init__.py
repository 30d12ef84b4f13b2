"""One module (or folder) per ``lsp prep`` stage, named as the stage; see ``lsp_prep.pipeline``."""
