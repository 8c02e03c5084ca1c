"""Networks (U-Net, encoder U-Nets), losses and metrics: torch only, no Lightning."""
