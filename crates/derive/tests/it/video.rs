//! `video-thumbnail`: a frame of a video made by ffmpeg in the test.
