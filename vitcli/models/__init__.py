"""Models: the one resolver (timm names, hf-hub: ids, local and run folders), Hub downloads, vitcli's own
timm registrations (the MetaFormer token-mixer swap), meta-device building, FLOP counting and the zoo."""
