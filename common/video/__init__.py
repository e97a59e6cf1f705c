"""What the demo does with videos: tracking people across frames, temporal smoothing, H.264 writing and the SMPL
parameter / mesh exports."""
