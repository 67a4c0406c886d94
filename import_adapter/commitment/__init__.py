"""Storage Commitment Push Model SCP (PS3.4 Annex J): is what the modality sent safely stored?"""
