"""Network class names that 3DGP's embedded sources import from `src.training.*` (networks_stylegan2,
networks_camera_adaptor, networks_depth_adaptor, networks_epigraf, tri_plane_renderer). A 3DGP pickle restores
these objects from their own embedded code; this codebase cannot *construct* them, so the stand-ins raise a clear
error if anything tries to (e.g. 3DGP code rebuilding a module). Our own 3DGP networks are eg3d_ext.generator etc."""

#----------------------------------------------------------------------------

def _placeholder(name: str, ours: str) -> type:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f'3DGP class {name} can only be restored from a 3DGP pickle, not constructed here; '
                                  f'this codebase implements it as {ours}')
    return type(name, (object,), dict(__init__=__init__, __doc__=f'Stand-in for 3DGP {name} (see module docstring).'))

SynthesisBlock = _placeholder('SynthesisBlock', 'training.networks_stylegan2.SynthesisBlock')
SynthesisLayer = _placeholder('SynthesisLayer', 'training.networks_stylegan2.SynthesisLayer')
ToRGBLayer = _placeholder('ToRGBLayer', 'training.networks_stylegan2.ToRGBLayer')
SynthesisNetwork = _placeholder('SynthesisNetwork', 'eg3d_ext.generator.Generator')
Generator = _placeholder('Generator', 'eg3d_ext.generator.Generator')
CameraAdaptor = _placeholder('CameraAdaptor', 'eg3d_ext.camera_generator.CameraGenerator')
ParamsAdaptor = _placeholder('ParamsAdaptor', 'eg3d_ext.camera_generator.CameraGenerator')
DepthAdaptor = _placeholder('DepthAdaptor', 'eg3d_ext.depth_adaptor.DepthAdaptor')
ImportanceRenderer = _placeholder('ImportanceRenderer', 'eg3d_ext.generator.Generator.render')
ClassicalRayMarcher = _placeholder('ClassicalRayMarcher', 'eg3d_ext.generator.march')
MipRayMarcher2 = _placeholder('MipRayMarcher2', 'training.volumetric_rendering.ray_marcher.MipRayMarcher2')

#----------------------------------------------------------------------------
