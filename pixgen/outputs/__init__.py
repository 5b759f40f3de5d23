"""Every file a run writes, and reading images back.

writer  run folders, PNGs with their settings, frames, GIF, the streamed MP4, the gallery
images  reading images safely, to_pil
video   ffmpeg through imageio-ffmpeg
state   the loop state, resumable bit for bit
"""
