"""Pieces shared by several families: EMA, likelihoods, U-Net, attention."""
