"""Random crop with zero padding and horizontal flip, as a pure function of a key.

It runs inside the jitted train step, so it is off the host's critical path, deterministic for
a seed and step, and independent of how the batch is sharded.
"""
import jax
import jax.numpy as jnp


def random_crop_flip(key: jax.Array, images: jax.Array, *, crop_padding: int,
                     flip: bool) -> jax.Array:
  """torchvision's RandomCrop(size, padding=crop_padding) + RandomHorizontalFlip on NHWC."""
  if crop_padding == 0 and not flip:
    return images
  batch, height, width, _ = images.shape
  crop_key, flip_key = jax.random.split(key)
  if crop_padding:
    p = crop_padding
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * p + 1)
    crop = lambda image, offset: jax.lax.dynamic_slice(
        image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))
    images = jax.vmap(crop)(padded, offsets)
  if flip:
    mirrored = jax.random.bernoulli(flip_key, 0.5, (batch, 1, 1, 1))
    images = jnp.where(mirrored, images[:, :, ::-1, :], images)
  return images
