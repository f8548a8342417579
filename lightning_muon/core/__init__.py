"""Pure tensor transforms of the Muon family: no optimizer classes, no distributed code, no Lightning."""
