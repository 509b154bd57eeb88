"""The tasks the trainer trains: language modelling on windows, packed SFT, classification."""
