"""Test-only loss: EG3D's StyleGAN2Loss that feeds NaN images to D in the Dmain phases of chosen ticks."""

import torch
from training.loss import StyleGAN2Loss

#----------------------------------------------------------------------------

class NaNLoss(StyleGAN2Loss):
    """NaN real images in the first `times` Dmain calls with cur_nimg >= nan_from_nimg (-1 = forever). The tiny test
    config has one chunk per step, so a call is a step; a rollback that replays the step is not poisoned again."""

    def __init__(self, nan_from_nimg: int = 0, times: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.nan_from_nimg, self.times, self.poisoned = nan_from_nimg, times, []

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg, **extras):
        if phase == 'Dmain' and cur_nimg >= self.nan_from_nimg and (self.times < 0 or len(self.poisoned) < self.times):
            self.poisoned.append(cur_nimg)
            real_img = real_img * torch.tensor(float('nan'))
        super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg, **extras)

#----------------------------------------------------------------------------
