"""The calib stage: master calibrations and science-frame reduction (science in ``science/``)."""
