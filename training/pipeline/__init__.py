"""`sft-eraser pipeline`: a recipe file run end to end (data, SFT, LCDD, erasers, the store)."""
